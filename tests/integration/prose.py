"""prose - a small corpus of real English prose for the retrieval tests:
twelve short articles on unrelated subjects, each with words of its own, and
queries whose answer is known (the article they were written about).

    from prose import ARTICLES, QUERIES, ALMANAC_PARTS
    ARTICLES["bread"]        -> text
    QUERIES                  -> [(query text, id of the article that answers it)]
    ALMANAC_PARTS            -> four paragraphs that a test stores as one
                                document cut into one chunk per paragraph
"""

ARTICLES = {
    "volcano": (
        "A volcano is an opening in the crust of a planet through which molten "
        "rock, ash and gases escape from a magma chamber below the surface. When "
        "pressure builds up, the magma rises through cracks and erupts, either "
        "quietly as rivers of lava or violently, throwing ash columns many "
        "kilometres into the sky. Most of the world's active volcanoes sit along "
        "the edges of tectonic plates, where one plate sinks beneath another. "
        "Geologists watch for small earthquakes and swelling of the ground, "
        "which often come before an eruption."),
    "honeybee": (
        "A honeybee colony is a family of tens of thousands of worker bees, a "
        "few hundred drones and a single queen who lays every egg. Workers "
        "gather nectar and pollen from flowers, and on returning to the hive "
        "they perform a waggle dance that tells their sisters the direction and "
        "distance of the food. Nectar is stored in wax cells and fanned by "
        "wings until enough water evaporates and it becomes honey. In winter "
        "the bees cluster around the queen and shiver to keep her warm."),
    "lighthouse": (
        "Before satellite navigation, a lighthouse was the sailor's surest "
        "guide along a dangerous coast. Each tower flashed its own pattern, so "
        "that a navigator counting the seconds between flashes could tell which "
        "headland he was passing. The keepers trimmed the wicks, wound the "
        "clockwork that turned the great glass lens, and kept the lamp burning "
        "through every storm. Today most lights are automatic, and the keepers' "
        "cottages have become museums or holiday homes."),
    "bread": (
        "To bake a loaf of bread you mix flour, water, salt and yeast into a "
        "dough and knead it until it becomes smooth and elastic. The yeast eats "
        "the sugars in the flour and releases carbon dioxide, which is trapped "
        "by the gluten and makes the dough rise. After shaping, the loaf rests "
        "once more and then goes into a hot oven, where the crust browns and "
        "the crumb sets. A sourdough starter replaces the packet of yeast with "
        "wild yeasts and lactic bacteria kept alive in a jar."),
    "chess": (
        "Chess is played on a board of sixty-four squares by two players who "
        "each command sixteen pieces: a king, a queen, two rooks, two bishops, "
        "two knights and eight pawns. The aim is to checkmate the opposing king, "
        "attacking it so that it has no safe square left. Openings have names "
        "of their own, such as the Sicilian Defence or the Queen's Gambit, in "
        "which a pawn is offered early to gain control of the centre. Grandmasters "
        "study endgames as carefully as openings."),
    "glacier": (
        "A glacier forms where more snow falls each winter than melts each "
        "summer, so that the snow piles up, compacts and slowly turns to ice. "
        "Under its own weight the ice begins to flow downhill like a very slow "
        "river, carving deep U-shaped valleys and carrying boulders far from "
        "where they were torn loose. When a glacier retreats it leaves ridges "
        "of rubble called moraines and lakes dammed behind them. Many alpine "
        "glaciers have shrunk sharply over the past century."),
    "violin": (
        "A violin maker carves the arched top plate from spruce and the back, "
        "ribs and neck from maple, chosen for its flame. Inside, a thin bass bar "
        "is glued under one foot of the bridge and a small sound post is wedged "
        "under the other, so that the vibrations of the strings spread across "
        "the whole body. Coats of varnish protect the wood and colour it. The "
        "instruments of Stradivari and Guarneri, made in Cremona three centuries "
        "ago, are still played and prized by soloists."),
    "comet": (
        "A comet is a lump of ice and dust a few kilometres across that spends "
        "most of its long orbit far beyond the planets. As it swings in towards "
        "the Sun the ice turns to gas, and the nucleus becomes wrapped in a "
        "glowing coma. Sunlight and the solar wind push the gas and dust away "
        "into tails that can stretch for millions of kilometres, always pointing "
        "away from the Sun. Halley's comet returns roughly every seventy-six "
        "years."),
    "tide": (
        "The tides are the regular rise and fall of the sea caused mainly by "
        "the pull of the Moon. The Moon's gravity raises a bulge of water on "
        "the side of the Earth facing it and another on the far side, so most "
        "coasts see two high tides and two low tides every day. When the Sun "
        "and the Moon line up, at new and full moon, their pulls add together "
        "and give spring tides with the greatest range; at the quarter moons "
        "the range is smaller and the tides are called neap tides."),
    "printing": (
        "Johannes Gutenberg's printing press, built in Mainz around 1450, "
        "combined movable metal type, an oil-based ink and a screw press "
        "adapted from those used to make wine. A compositor set the letters of "
        "each page by hand in a frame, the type was inked, and sheets of paper "
        "were pressed against it one after another. Books that had taken a "
        "scribe months to copy could now be produced by the hundred, and within "
        "fifty years printing shops had spread to every major European city."),
    "coffee": (
        "Coffee beans are the seeds of a red fruit called the cherry, grown on "
        "shrubs in the tropics, mostly in Brazil, Vietnam, Colombia and "
        "Ethiopia. After harvest the seeds are washed or dried, hulled and then "
        "roasted, which turns them brown and creates the aromas we associate "
        "with the drink. Espresso forces hot water through finely ground coffee "
        "under pressure, while a filter brew lets it drip slowly through a "
        "paper cone. Arabica beans give a milder cup than robusta."),
    "railway": (
        "The first public railway to carry passengers in steam-hauled trains "
        "opened between Stockton and Darlington in 1825, and George "
        "Stephenson's locomotive Rocket won the Rainhill trials four years "
        "later. Railways soon spread across every industrial country, cutting "
        "journeys that had taken days by stagecoach to a few hours. Standard "
        "time zones were introduced largely so that railway timetables would "
        "agree from one town to the next, and the gauge of the track became a "
        "matter of fierce commercial rivalry."),
}

# (query, the article that answers it): wording differs from the article's,
# but shares its distinctive words.
QUERIES = [
    ("how does yeast make the dough rise in the oven", "bread"),
    ("which pieces does each chess player command on the board", "chess"),
    ("why do comets grow tails near the sun", "comet"),
    ("magma erupts through cracks in the crust", "volcano"),
    ("the waggle dance of worker bees in the hive", "honeybee"),
    ("spring tides and neap tides caused by the moon", "tide"),
    ("Gutenberg movable type and the printing press", "printing"),
    ("spruce and maple wood of a violin and its varnish", "violin"),
    ("ice flowing downhill and leaving moraines", "glacier"),
    ("keepers of the lamp on a dangerous coast", "lighthouse"),
    ("roasted beans and espresso", "coffee"),
    ("steam locomotive Rocket and railway timetables", "railway"),
]

# Four paragraphs stored as one document, chunked one paragraph a chunk.
ALMANAC_PARTS = [
    ("Sailing ships once carried cargoes of tea from China to London, racing "
     "each other home because the first tea of the season fetched the best "
     "price. The clippers were long and narrow, with towering masts and acres "
     "of canvas."),
    ("An orchard of apple trees needs bees for pollination in spring, pruning "
     "in winter and patience: a young tree may take five years to bear fruit. "
     "Cider apples are often too sour or bitter to eat raw."),
    ("The aurora appears when charged particles from the solar wind strike the "
     "upper atmosphere near the magnetic poles, making oxygen glow green and red "
     "and nitrogen glow blue and purple in shimmering curtains."),
    ("A marathon runner covers forty-two kilometres, and the hardest part often "
     "comes after thirty, when the stores of glycogen in the muscles run low and "
     "the legs feel like lead."),
]

ALMANAC_QUERIES = [
    ("clipper ships racing with cargoes of tea", 0),
    ("apple orchard pruning and cider", 1),
    ("aurora glowing green in the upper atmosphere near the poles", 2),
    ("marathon runners and glycogen in the muscles", 3),
]
