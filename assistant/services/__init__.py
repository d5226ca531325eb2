"""The services ``Assistant`` builds from settings and exposes: documents, chat,
conversations, tasks, training, datasets, serving, and the background work on an index
(``index_jobs``). Each takes what it needs in ``__init__``; none formats UI text."""
