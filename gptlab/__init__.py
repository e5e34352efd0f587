"""gptlab: build a GPT from its parts, train it with Lightning, configure it with Hydra."""

__version__ = "0.1.0"
