"""Stream processing: the Faust app whose agents decide clean or dropped for every raw event."""
