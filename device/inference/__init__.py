"""On-device inference: the LiteRT loader and the face (and later speech) analyzers."""
