"""ASTPN model and its shared preprocessing.

Deliberately imports nothing: the service imports `model.preprocessing` in an environment without
torch, so torch may only be imported by `model.network`.
"""
