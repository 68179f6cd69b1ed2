"""Workloads that drive a model: the seeded demo, test_vmalloc cases, generators."""
