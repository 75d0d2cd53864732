"""Baseline and learning agents (heuristics, JAX PPO, Stable-Baselines3 scripts)."""
