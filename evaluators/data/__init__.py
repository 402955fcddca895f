"""Data: text splits (hub, a data folder, or the bundled copy in ``bundled/``), token windows,
calibration batches, and the calibration statistics collected from them."""
