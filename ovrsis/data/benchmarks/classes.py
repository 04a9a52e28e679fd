"""Class lists and label colours of the benchmark datasets, in id order (datasets.md).

Facts only: the dataset records (:mod:`.catalog`) and the preparation scripts
(``datasets/prepare_*.py``) both read them here, so a class order or a colour is written
once. Section numbers refer to ``shared/spec/datasets.md``.
"""
from __future__ import annotations

RGB = tuple[int, int, int]

# §2.1 DLRSD: 17 classes; the colours are the registration's visualisation metadata,
# used as the colour → id map for colour-coded labels (UNCERTAIN: original palette).
DLRSD_CLASSES = (
    "airplane", "bare soil", "buildings", "cars", "chaparral", "court", "dock", "field", "grass",
    "mobile home", "pavement", "sand", "sea", "ship", "tanks", "trees", "water",
)
DLRSD_COLOURS: tuple[RGB, ...] = (
    (166, 202, 240), (128, 128, 0), (0, 0, 128), (255, 0, 0), (0, 128, 0), (128, 0, 0),
    (255, 233, 233), (160, 160, 164), (0, 128, 128), (90, 87, 255), (255, 255, 0), (255, 192, 0),
    (0, 0, 255), (255, 0, 192), (128, 0, 128), (0, 255, 0), (0, 255, 255),
)

# §2.2 iSAID: 15 classes; raw background (0, 0, 0) is ignored.
ISAID_CLASSES = (
    "ship", "storage tank", "baseball diamond", "tennis court", "basketball court",
    "ground track field", "bridge", "large vehicle", "small vehicle", "helicopter",
    "swimming pool", "roundabout", "soccer ball field", "plane", "harbor",
)
ISAID_COLOURS: tuple[RGB, ...] = (
    (0, 0, 63), (0, 63, 63), (0, 63, 0), (0, 63, 127), (0, 63, 191), (0, 63, 255), (0, 127, 63),
    (0, 127, 127), (0, 0, 127), (0, 0, 191), (0, 0, 255), (0, 191, 127), (0, 127, 191),
    (0, 127, 255), (0, 100, 155),
)
ISAID_BACKGROUND: RGB = (0, 0, 0)

# §2.3/§2.4 ISPRS Potsdam and Vaihingen: same names, order and colours; black = boundary.
ISPRS_CLASSES = ("Impervious surfaces", "Building", "Low vegetation", "Tree", "Car", "Clutter/background")
ISPRS_COLOURS: tuple[RGB, ...] = (
    (255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0),
)
ISPRS_BOUNDARY: RGB = (0, 0, 0)
# §4.4 GSNet Potsdam: 6 registered names (clutter = id 5 is the ignore value), 5 prompts.
GSNET_POTSDAM_CLASSES = ("impervious surface", "building", "low vegetation", "tree", "car", "clutter")

# §2.5 UAVid: V1 keeps both car classes; V2 merges them into "Car" (id 5) and moves Human to 6.
UAVID_V1_CLASSES = (
    "Background clutter", "Building", "Road", "Tree", "Low vegetation", "Moving car", "Static car", "Human",
)
UAVID_COLOURS: tuple[RGB, ...] = (
    (0, 0, 0), (128, 0, 0), (128, 64, 128), (0, 128, 0), (128, 128, 0), (64, 0, 128), (192, 0, 192),
    (64, 64, 0),
)
UAVID_V2_CLASSES = ("Background/Clutter", "Building", "Road", "Tree", "Low vegetation", "Car", "Human")
UAVID_V1_TO_V2 = (0, 1, 2, 3, 4, 5, 5, 6)  # V1 id → V2 id (moving and static car merge)

# §2.6 UDD5 (raw gt ids used directly; UDD-6 has another order: do not mix).
UDD5_V1_CLASSES = ("Vegetation", "Building", "Road", "Vehicle", "Other")
UDD5_V2_CLASSES = ("Vegetation", "Building", "Road", "Vehicle", "Background/Clutter")

# §2.7 LoveDA: raw ids 0 no-data .. 7 agriculture. V1 evaluates no-data; V2 drops it (raw − 1).
LOVEDA_V1_CLASSES = ("no-data", "Background", "Building", "Road", "Water", "Barren", "Forest", "Agriculture")
LOVEDA_V2_CLASSES = ("Background", "Building", "Road", "Water", "Barren", "Forest", "Agriculture Land")

# §2.8 VDD (raw gt ids used directly). The RSKT JSON capitalises the V1 names.
VDD_V1_CLASSES = ("Other", "Wall", "Road", "Vegetation", "Vehicle", "Roof", "Water")
VDD_V2_CLASSES = ("other, Background", "facade, wall", "road", "vegetation", "vehicle, car", "roof", "water")

# §3.1 OVRSIS95K: 35 classes, background is a trained, prompted class (id 34).
OVRSIS95K_CLASSES = (
    "airplane", "airport", "baseball field", "basketball court", "bridge", "chimney",
    "expressway service area", "expressway toll station", "dam", "golf field", "ground track field",
    "harbor", "overpass", "ship", "stadium", "storage tank", "tennis court", "train station", "vehicle",
    "windmill", "soccer ball field", "roundabout", "container crane", "helipad", "building", "road",
    "water", "tree", "grass", "bareland", "rangeland", "developed space", "agriculture land",
    "intersection", "unlabeled areas, background, clutter",
)

# §3.2 FLAIR: raw ids 1..19; V2 keeps 1..12 as 0..11 (rest ignored); GSNet adds "other" = 12.
FLAIR_CLASSES = (
    "building", "pervious surface", "impervious surface", "bare soil", "water", "coniferous",
    "deciduous", "brushwood", "vineyard", "herbaceous vegetation", "agricultural land", "plowed land",
)
GSNET_FLAIR_PROMPTS = tuple(
    {"pervious surface": "pervious-surface", "impervious surface": "impervious-surface"}.get(n, n)
    for n in FLAIR_CLASSES
)

# §3.3 OpenEarthMap: raw ids 0 unknown .. 8 building, used directly in V2 (0 evaluated).
OEM_V2_CLASSES = (
    "Background", "Bareland, Barren, Dirt", "Pasture, Grass, Lawn", "Developed Space", "Roads",
    "Tree, Forest", "Water, River", "Agricultural Land, Cropland", "Buildings, Roof, House",
)
# §7.1 AerOSeg OEM: the 8 official classes (raw id − 1, unknown ignored).
OEM_OFFICIAL_CLASSES = (
    "bareland", "rangeland", "developed space", "road", "tree", "water", "agriculture land", "building",
)

# §4.1 LandDiscover50K: 40 classes, id 0 "background" is the ignore value. Spelling as in the code.
LANDDISCOVER50K_CLASSES = (
    "background", "bare land", "grass", "pavement", "road", "tree", "water", "agriculture land",
    "buildings", "forest land", "barren land", "urban land", "large-vehicle", "swimming-pool",
    "helicopter", "bridge", "plane", "ship", "soccer-ball-field", "basketball-court",
    "ground-track-field", "small-vehicle", "baseball-diamond", "tennis-court", "roundabout",
    "storage-tank", "harbor", "container-crane", "airport", "helipad", "chimney",
    "expressway service area", "expresswalltoll station", "dam", "golf field", "overpass", "stadium",
    "train station", "vehicle", "windmill",
)

# §4.2 FAST (SAMRS), GSNet protocol: 37 classes, unlabeled = 255.
FAST_CLASSES = (
    "A220", "A321", "A330", "A350", "ARJ21", "Baseball-Field", "Basketball-Court", "Boeing737",
    "Boeing747", "Boeing777", "Boeing787", "Bridge", "Bus", "C919", "Cargo-Truck", "Dry-Cargo-Ship",
    "Dump-Truck", "Engineering-Ship", "Excavator", "Fishing-Boat", "Football-Field", "Intersection",
    "Liquid-Cargo-Ship", "Motorboat", "other-airplane", "other-ship", "other-vehicle", "Passenger-Ship",
    "Roundabout", "Small-Car", "Tennis-Court", "Tractor", "Trailer", "Truck-Tractor", "Tugboat", "Van",
    "Warship",
)

# §4.5 FloodNet: raw index masks, GSNet ignores 0 but still prompts "Background".
FLOODNET_CLASSES = (
    "Background", "Building-flooded", "Building-non-flooded", "Road-flooded", "Road-non-flooded",
    "Water", "Tree", "Vehicle", "Pool", "Grass",
)

# §5 downstream single-class tasks: 0 background, 1 foreground (Pi-Seg / SegEarth names).
BUILDING_CLASSES = ("background", "building")
ROAD_CLASSES = ("background", "road")
WATER_CLASSES = ("background", "water")

# §5 Inria: the 27 FCtL test tiles (training-set tiles used as test).
INRIA_TEST_TILES = (
    "vienna3", "chicago10", "vienna20", "austin1", "tyrol-w25", "vienna9", "chicago14", "vienna18",
    "kitsap36", "kitsap35", "austin22", "kitsap34", "austin7", "vienna11", "kitsap14", "kitsap25",
    "austin12", "vienna15", "kitsap9", "austin36", "vienna6", "chicago23", "tyrol-w3", "chicago26",
    "austin24", "tyrol-w1", "tyrol-w36",
)

# §2.3 SegEarth/MMSeg Potsdam validation tiles (GSNet's Potsdam is this split).
POTSDAM_VAL_TILES = (
    "2_13", "2_14", "3_13", "3_14", "4_13", "4_14", "4_15", "5_13", "5_14", "5_15", "6_13", "6_14",
    "6_15", "7_13",
)

# §7.1 AerOSeg seen/unseen (group A = seen, group B = unseen; see the confidence notes there).
AEROSEG_ISAID_UNSEEN = ("tennis court", "bridge", "small vehicle", "helicopter", "soccer ball field", "harbor")
AEROSEG_DLRSD_UNSEEN = ("airplane", "bare soil", "buildings", "cars", "pavement", "sea", "trees")
AEROSEG_OEM_UNSEEN = ("developed space", "tree", "water", "agriculture land")
# §7.2 Pi-Seg UAVid (V2 names): background clutter is neither seen nor unseen.
PISEG_UAVID_SEEN = ("Building", "Road", "Tree")
PISEG_UAVID_UNSEEN = ("Low vegetation", "Car", "Human")

# methods-part2.md §S.1 SegEarth-OV evaluation sets: label ids as its mmseg converters (and
# reduce_zero_label) leave them, and the lines of its class files (',' = sub-prompts, max rule).
SEGEARTH_OEM_CLASSES = ("background", "bareland", "grass", "pavement", "road", "tree", "water", "cropland",
                        "building")
SEGEARTH_OEM_PROMPTS = ("background", "bareland,barren", "grass", "pavement", "road", "tree,forest", "water,river",
                        "cropland", "building,roof,house")
SEGEARTH_LOVEDA_CLASSES = ("background", "building", "road", "water", "barren", "forest", "agricultural")
SEGEARTH_LOVEDA_PROMPTS = ("background", "building,roof,house", "road", "water", "barren", "forest", "agricultural")
SEGEARTH_ISAID_PROMPTS = ("background", "ship", "store tank", "baseball diamond", "tennis court", "basketball court",
                          "ground track field", "bridge", "large vehicle", "small vehicle", "helicopter",
                          "swimming pool", "roundabout", "soccer ball field", "plane", "harbor")
SEGEARTH_ISPRS_CLASSES = ("impervious surface", "building", "low vegetation", "tree", "car", "clutter")
SEGEARTH_POTSDAM_PROMPTS = ("road,parking lot", "building", "low vegetation", "tree", "car", "clutter,background")
SEGEARTH_VAIHINGEN_PROMPTS = SEGEARTH_ISPRS_CLASSES
SEGEARTH_UAVID_CLASSES = ("background", "building", "road", "car", "tree", "vegetation", "human")
SEGEARTH_UDD5_CLASSES = ("vegetation", "building", "road", "vehicle", "background")
SEGEARTH_VDD_CLASSES = ("background", "facade", "road", "vegetation", "vehicle", "roof", "water")
