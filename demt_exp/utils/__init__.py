"""The bottom layer: helpers every other part may import, which import none of them."""
