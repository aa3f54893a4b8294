"""Reward functions and the sandbox client they score code with."""
