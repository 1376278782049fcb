"""``lmcraft curve``: the learning curve, a task's test metric against the number of training labels."""
