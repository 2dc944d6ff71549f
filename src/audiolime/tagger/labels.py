"""The tag vocabularies of our taggers, in output order: the 50 Million Song Dataset tags (musicnn-msd,
fcn-msd), MagnaTagATune's top 50 (fcn-mtat) and MTG-Jamendo's top 50 (fcn-jamendo)."""

from __future__ import annotations

# musicnn's MSD_LABELS order, identical to split/msd/50tagList.txt of minzwon/sota-music-tagging-models.
MSD_LABELS = [
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists",
    "classic rock", "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s",
    "chill", "instrumental", "punk", "oldies", "blues", "hard rock", "ambient", "acoustic",
    "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country",
    "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock",
    "60s", "rnb", "indie pop", "sad", "House", "happy",
]

# minzwon/sota-music-tagging-models src/eval.py `mtat_tags`: the output order of its MagnaTagATune models.
MTAT_LABELS = [
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
    "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing",
    "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal",
    "pop", "soft", "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance",
    "male voice", "female vocal", "beats", "harp", "cello", "no voice", "weird", "country", "metal",
    "female voice", "choral"
]

# The output order of the MTG-Jamendo models of minzwon/sota-music-tagging-models: its training
# binarised the tags with scikit-learn's LabelBinarizer (training/data_loader/jamendo_loader.py),
# whose classes are *sorted*, so output i is the i-th tag in alphabetical order, not the i-th of the
# TAGS list (or of src/eval.py's `jamendo_tags`, ../shared's tags-jamendo.txt). Read in the list
# order, the FCN calls Brahms "atmospheric, trance, reggae"; sorted, "classical, soundtrack, orchestral".
JAMENDO_LABELS = [
    "genre---alternative", "genre---ambient", "genre---atmospheric", "genre---chillout",
    "genre---classical", "genre---dance", "genre---downtempo", "genre---easylistening",
    "genre---electronic", "genre---experimental", "genre---folk", "genre---funk", "genre---hiphop",
    "genre---house", "genre---indie", "genre---instrumentalpop", "genre---jazz", "genre---lounge",
    "genre---metal", "genre---newage", "genre---orchestral", "genre---pop", "genre---popfolk",
    "genre---poprock", "genre---reggae", "genre---rock", "genre---soundtrack", "genre---techno",
    "genre---trance", "genre---triphop", "genre---world", "instrument---acousticguitar",
    "instrument---bass", "instrument---computer", "instrument---drummachine", "instrument---drums",
    "instrument---electricguitar", "instrument---electricpiano", "instrument---guitar",
    "instrument---keyboard", "instrument---piano", "instrument---strings", "instrument---synthesizer",
    "instrument---violin", "instrument---voice", "mood/theme---emotional", "mood/theme---energetic",
    "mood/theme---film", "mood/theme---happy", "mood/theme---relaxing"
]
