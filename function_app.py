"""Entry point the Functions host indexes: the app and its blueprints, nothing else."""

import azure.functions as func

from functions.event_grid import bp as event_grid_bp
from functions.http_api import bp as http_api_bp
from functions.timer import bp as timer_bp

app = func.FunctionApp()
app.register_functions(event_grid_bp)
app.register_functions(http_api_bp)
app.register_functions(timer_bp)
