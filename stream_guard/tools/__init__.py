"""Offline tools around the runtime: the evaluate replay, the simulator, the demo, local servers.

Nothing in the worker's path imports this package; the tools import the runtime.
"""
