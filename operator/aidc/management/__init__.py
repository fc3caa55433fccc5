"""Management: observe the cluster, decide what to do (pure), apply it (thin), report it."""
