"""Networks that learn from other networks: probes on activations (and, to come, the model zoo
and weight-space meta-networks)."""
