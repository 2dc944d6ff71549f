"""An explanation as a document (explanation.json), its listenable files, and their one writer."""
