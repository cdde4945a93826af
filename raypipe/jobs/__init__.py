"""The Ray edge: Ray Data stages, Ray tasks and actors around the plain modules in raypipe/."""
