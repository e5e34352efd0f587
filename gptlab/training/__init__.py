"""The Lightning side of gptlab: the pretraining module, optimizers, schedules, callbacks."""
