"""Users -> ranked items: the Recommender and its strategies, item-to-item co-occurrence,
blend's fitted weights, and leave-one-out metrics. Knows nothing about Ray or HTTP."""
