"""The machinery that runs a stage: the training loop, precision, stop signals, processes (launch,
warm forks), tracking and the stage record."""
