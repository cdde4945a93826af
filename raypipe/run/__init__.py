"""The run's bookkeeping: paths and URIs, artifact folders and their atomic commit,
resumable stages, pseudonymised ids and `forget`. No domain logic."""
