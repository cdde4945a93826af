"""What people read of a finished run: the HTML report, segment exports and the terminal
summary, all from the artifacts."""
