"""Command-line interface: one module per subcommand (parse → settings → library call → exit code)."""
