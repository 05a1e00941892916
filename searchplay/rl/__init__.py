"""Reinforcement learning: advantage estimators, policy losses and the Learner."""
