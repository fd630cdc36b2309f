"""One module per Snakemake rule; each has run(), taking the rule's input, output and params by name."""
