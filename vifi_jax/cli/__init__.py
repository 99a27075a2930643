"""The command-line layer: the flags every tool shares, each defined once (`flags`). How a command starts,
shows its help and fails is `data_pipelines.cli.run`, which the data tools use too."""
