"""The command modules of ``neuronscope``: each registers its commands on the app.

To add a command, write ``commands/NAME.py`` with ``register(app)`` and list
it in :data:`neuronscope.cli.COMMAND_MODULES`.
"""
