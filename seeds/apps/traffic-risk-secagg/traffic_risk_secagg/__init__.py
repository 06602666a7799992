"""traffic-risk-secagg: the traffic-risk model through Flower's legacy workflow API."""
