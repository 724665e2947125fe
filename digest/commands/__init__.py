"""One module per group of `digest` subcommands; each exposes `register(subparsers)`."""
