"""Entry point the Functions host indexes: the app and its blueprints, nothing else."""

import azure.functions as func

from functions.event_grid import bp as event_grid_bp

app = func.FunctionApp()
app.register_functions(event_grid_bp)
