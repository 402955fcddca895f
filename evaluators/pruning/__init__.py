"""Pruning: element-wise scores, which weights a quota removes, the exact pruners, one record per
method, and the per-block scores allocators read."""
