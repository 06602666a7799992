"""traffic-risk: logistic regression of road-incident risk, trained with Flower.

A standard Flower App: it uses only Flower's public API, so it runs unchanged
on a fednode federation, on Flower's Deployment Engine and on its simulation
engine. Each node's data arrives as a Parquet file named by the node config key
``data-path``; without it (simulation), the app uses a synthetic partition.
"""
