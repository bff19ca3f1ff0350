"""The study's plan, torch-free: its config, rows, results layout, search space, FLOPs and the
checks made before the first job."""
