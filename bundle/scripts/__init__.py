"""Custom code of the whole-heart 3D+T cine MR bundle (importable as ``scripts.*`` from the bundle root)."""
