"""CIFAR-10 search spaces (macro and micro), their children and controllers."""
