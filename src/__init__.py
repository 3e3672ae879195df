"""ENAS (Pham et al., 2018) ported to TensorFlow 2 / Keras 3."""
