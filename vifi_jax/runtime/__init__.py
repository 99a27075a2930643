"""What every job stands on: the device mesh and processes, the hardware's peaks, configs checked,
configs turned into data splits, work directories."""
