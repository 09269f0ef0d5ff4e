"""Networks that learn from other networks: probes on activations (``probes``), the model zoo
(``zoo``: a population of one architecture trained together with varied recipes, some
backdoored), and the meta-networks trained on it (``metanets``: weight statistics, a
permutation-invariant DeepSets network, and the MNTD trojan detector)."""
