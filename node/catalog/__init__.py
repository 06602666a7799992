"""The dataset catalog: what a node can share, its columns' sensitivity, and treated loading."""
