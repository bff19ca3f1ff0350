"""DetNAS search: evolution and random search (pure Python) and the supernet fitness."""
