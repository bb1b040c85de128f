"""A --gpus N run: torchrun's agent, the ranks it starts, and the folder they talk through."""
