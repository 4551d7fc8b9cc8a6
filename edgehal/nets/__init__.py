"""Architectures behind one model API and a registry (``create_model``)."""

from edgehal.nets.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
