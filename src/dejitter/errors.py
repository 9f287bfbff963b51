"""The exception every refused input raises, so the workflow can report it per scan."""


class ScanError(ValueError):
    """An input scan that cannot be processed.

    The message names the file and the problem; the workflow prefixes the scan id.
    """

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
