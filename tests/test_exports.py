"""``dsa prune`` writes its allocation record through ``dsa.outputs.exports``; ``dsa export`` turns it into JSON or
an llm-compressor recipe whose per-layer sparsities are the allocation's, layer by layer."""
import json
import re

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from dsa.cli import dispatch as cli
from dsa.outputs.exports import DECODER_LAYERS, allocation_record, llmcompressor_recipe, read_record
from evaluators.models.loading import model_label
from dsa.errors import UserError
from test_cli_llm import data_args

SPARSITIES = [0.55, 0.68, 0.74, 0.83]
LAYERS = [f"model.layers.{i}" for i in range(4)]


def record(method="wanda", **changes):
    return {**allocation_record(allocation="owl", formula="dsa(r_outlier(S), 0.08)", method=method, target=0.7,
                                model="tiny", requested=SPARSITIES, layers=LAYERS), **changes}


def modifier(recipe_text):
    """The one modifier of the recipe's one stage: (class name, arguments)."""
    recipe = yaml.safe_load(recipe_text)
    assert set(recipe) == {"dsa_gp", "sparsity_stage"}  # llm-compressor reads *_stage keys only
    stage = recipe["sparsity_stage"]
    (group,) = stage.values()
    ((name, args),) = group.items()
    return name, args


@pytest.fixture(scope="module")
def pruned(tiny_dir, tmp_path_factory):  # noqa: F811
    """A tiny model pruned by ``dsa prune`` with the OWL allocation (in-process, a few seconds)."""
    out = tmp_path_factory.mktemp("pruned") / "owl"
    args = ["prune", *map(str, data_args(tiny_dir)), "--allocation", "owl", "--method", "wanda",
            "--sparsity", "0.7", "--save", str(out), "--no-progress"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(args) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_prune_writes_the_record_with_formula_and_layers(pruned, tiny_dir):  # noqa: F811
    rec = json.loads((pruned / "allocation.json").read_text())
    assert rec["formula"] is None and rec["sympy"] is None and rec["allocation"] == "owl"  # a baseline, not a formula
    assert rec["layers"] == LAYERS
    # the model by its label (folder name and content digest), never by its path
    assert (rec["method"], rec["target"], rec["model"]) == ("wanda", 0.7, model_label(str(tiny_dir / "model")))
    assert re.fullmatch(r"model#[0-9a-f]{8}", rec["model"])
    assert len(rec["requested"]) == 4 and len(set(rec["requested"])) > 1  # OWL: not uniform
    assert abs(sum(rec["requested"]) / 4 - 0.7) < 1e-6
    assert read_record(pruned) == rec == read_record(pruned / "allocation.json")


def test_llmcompressor_recipe_prunes_each_named_layer_to_its_sparsity(pruned, tmp_path, capsys):
    out = tmp_path / "recipe.yaml"
    assert cli.main(["export", str(pruned), "--to", "llmcompressor", "--out", str(out)]) == 0
    rec = read_record(pruned)
    name, args = modifier(out.read_text())
    assert name == "WandaPruningModifier"
    assert args["sparsity"] == rec["requested"]
    assert args["mask_structure"] == "0:0"
    # llm-compressor gives sparsity[i] to the i-th module that targets match, in model order: the names
    # are the model's decoder blocks, in order, and each was pruned by dsa to that very sparsity
    model = AutoModelForCausalLM.from_pretrained(pruned)
    modules = dict(model.named_modules())
    assert args["targets"] == [n for n in modules if n in args["targets"]]
    for target, want in zip(args["targets"], args["sparsity"]):
        weights = [m.weight for m in modules[target].modules() if isinstance(m, torch.nn.Linear)]
        zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
        assert abs(zeros - want) <= sum(w.shape[0] for w in weights) / sum(w.numel() for w in weights)
    assert yaml.safe_load(out.read_text())["dsa_gp"]["allocation"] == "owl"  # what was applied

    capsys.readouterr()
    assert cli.main(["export", str(pruned / "allocation.json")]) == 0  # --to json, printed
    assert json.loads(capsys.readouterr().out) == rec


@pytest.mark.parametrize("method, name", [("wanda", "WandaPruningModifier"), ("sparsegpt", "SparseGPTModifier")])
def test_recipe_modifier_follows_the_method(method, name):
    got, args = modifier(llmcompressor_recipe(record(method)))
    assert got == name and args["sparsity"] == SPARSITIES and args["targets"] == LAYERS


def test_recipe_without_layer_names_targets_llama_decoder_layers():
    _, args = modifier(llmcompressor_recipe(record(layers=None)))
    assert args["targets"] == [DECODER_LAYERS]
    pattern = DECODER_LAYERS.removeprefix("re:")
    names = ["model.layers.0", "model.layers.12", "model.layers.0.mlp", "model.layers.0.mlp.up_proj", "lm_head"]
    assert [n for n in names if re.match(pattern, n)] == ["model.layers.0", "model.layers.12"]


def test_magnitude_and_mismatched_layers_are_refused():
    with pytest.raises(UserError, match="MagnitudePruningModifier"):
        llmcompressor_recipe(record("magnitude"))
    with pytest.raises(UserError, match="4 sparsities"):
        llmcompressor_recipe(record(layers=LAYERS[:3]))


def test_uniform_record_has_no_formula():
    rec = allocation_record(allocation="uniform", formula=None, method="wanda", target=0.5, model="m",
                            requested=[0.5, 0.5])
    assert rec["sympy"] is None and rec["layers"] is None
    assert modifier(llmcompressor_recipe(rec))[1]["sparsity"] == [0.5, 0.5]


@pytest.mark.parametrize("content, needle", [
    (None, "no such file"),
    ("{not json", "is not JSON"),
    ('{"method": "wanda", "requested": [0.5, 1.5]}', "not an allocation record"),
    ('{"method": "wanda"}', "not an allocation record"),
    ('{"requested": [0.5]}', "no 'method'"),
    ('[0.5, 0.6]', "not an allocation record"),
])
def test_export_bad_input_is_one_line_and_exit_code_2(content, needle, tmp_path, capsys):
    source = tmp_path / "allocation.json"
    if content is not None:
        source.write_text(content)
    assert cli.main(["export", str(source), "--to", "llmcompressor", "--out", str(tmp_path / "r.yaml")]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.yaml").exists()
