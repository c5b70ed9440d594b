"""Evaluation tasks: each produces deterministic instances and scores a method's answers."""
