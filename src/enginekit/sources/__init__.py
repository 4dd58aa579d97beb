"""What a model path is and how its inputs are planned: below backends and export, so both can use it.

``detect`` (model kinds and formats, no framework imported), ``paddle_files`` (a Paddle model's files),
``torch_load`` (loading PyTorch sources, with the trust rules for files that run code), ``shapes`` (input
specs and dynamic-axis plans for exports and PyTorch runners).
"""
