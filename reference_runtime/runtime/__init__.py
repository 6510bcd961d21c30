"""The GPU decode runtime: slot plans, baseline kernels, CUDA-graph decode, fault containment."""
