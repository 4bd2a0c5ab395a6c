"""The model server that runs inside the images build-push makes.

Self-contained: it imports only mlflow, starlette, uvicorn and prometheus_client (never the rest
of mlops_actions), so the image carries this directory and nothing else of the suite.
"""
