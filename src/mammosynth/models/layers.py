"""Custom Keras layers shared by builders; importing this module registers them for loading."""
