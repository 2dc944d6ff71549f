"""What a person reads of an explanation document: the terminal table (:mod:`.terminal`) and the
listening report ``explanation.html`` (:mod:`.view` computes what it shows, :mod:`.page` renders
it; written by the one artifact writer, :mod:`audiolime.artifacts`)."""
