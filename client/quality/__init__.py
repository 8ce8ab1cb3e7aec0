"""How good a model is: accuracy reports, their JSON/Markdown/HTML renderings, and comparisons of two runs."""
