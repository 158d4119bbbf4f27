"""demt_exp's Hydra plugin: the Optuna sweeper that continues an interrupted search (Hydra instantiates
sweepers only from the `hydra_plugins` namespace)."""
