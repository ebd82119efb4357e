"""Pure authentication checks: inputs and a resolver in, a frozen result out.

No logging, no milter, no configuration objects beyond plain arguments.
"""
