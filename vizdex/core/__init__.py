"""The torch-free core every room may import: the error hierarchy, ``VIZDEX_*`` parsing, kinds."""
