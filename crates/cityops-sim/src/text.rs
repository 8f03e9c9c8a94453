//! Vietnamese text for citizen reports, agencies and places.

/// Report categories with a few texts each, as citizens write them in the app or the hotline
/// operator types them.
pub const REPORT_CATEGORIES: [(&str, &[&str]); 6] = [
    (
        "moi_truong",
        &[
            "Rác thải tồn đọng nhiều ngày tại kiệt, bốc mùi hôi thối, đề nghị xử lý.",
            "Có người đổ trộm xà bần ra bãi đất trống gần nhà.",
            "Cống thoát nước bốc mùi, nhiều ruồi muỗi.",
        ],
    ),
    (
        "giao_thong",
        &[
            "Đèn tín hiệu giao thông tại ngã tư bị hỏng, xe cộ đi lại lộn xộn.",
            "Mặt đường có ổ gà lớn, rất nguy hiểm cho xe máy vào ban đêm.",
            "Xe tải đỗ chiếm lòng đường gây ùn tắc giờ cao điểm.",
        ],
    ),
    (
        "trat_tu_do_thi",
        &[
            "Quán ăn lấn chiếm vỉa hè, người đi bộ phải đi xuống lòng đường.",
            "Công trình xây dựng làm ồn sau 22 giờ.",
        ],
    ),
    (
        "chieu_sang",
        &[
            "Đèn đường không sáng cả đoạn, đi lại ban đêm rất tối.",
            "Cột đèn bị nghiêng, có nguy cơ đổ.",
        ],
    ),
    (
        "ngap_ung",
        &[
            "Mưa lớn, nước ngập sâu khoảng 40cm, xe máy chết máy hàng loạt.",
            "Nước tràn vào nhà dân do cống bị tắc.",
        ],
    ),
    (
        "cay_xanh",
        &[
            "Cây xanh gãy đổ chắn ngang đường sau cơn mưa.",
            "Cành cây lớn có nguy cơ gãy, đề nghị cắt tỉa.",
        ],
    ),
];

/// Channels citizens report through.
pub const CHANNELS: [&str; 4] = ["app", "hotline_1022", "zalo", "web"];

/// Agencies that receive online public-service dossiers.
pub const AGENCIES: [(&str, &str); 6] = [
    ("Sở Xây dựng", "1.009972"),
    ("Sở Tài nguyên và Môi trường", "1.004227"),
    ("Sở Kế hoạch và Đầu tư", "2.001610"),
    ("Sở Giao thông vận tải", "1.002835"),
    ("UBND quận", "1.003622"),
    ("Công an thành phố", "2.000986"),
];

/// Hospitals reporting bed occupancy: id, name, district index, beds.
pub const HOSPITALS: [(&str, &str, usize, u32); 8] = [
    ("bv-da-nang", "Bệnh viện Đà Nẵng", 0, 1400),
    ("bv-c-da-nang", "Bệnh viện C Đà Nẵng", 0, 750),
    ("bv-phu-san-nhi", "Bệnh viện Phụ sản - Nhi Đà Nẵng", 1, 800),
    ("bv-ung-buou", "Bệnh viện Ung bướu Đà Nẵng", 4, 700),
    ("bv-son-tra", "Trung tâm Y tế quận Sơn Trà", 2, 250),
    (
        "bv-ngu-hanh-son",
        "Trung tâm Y tế quận Ngũ Hành Sơn",
        3,
        200,
    ),
    ("bv-cam-le", "Trung tâm Y tế quận Cẩm Lệ", 5, 200),
    ("bv-hoa-vang", "Trung tâm Y tế huyện Hòa Vang", 6, 250),
];

/// Camera zones: intersections and crowded places.
pub const CAMERA_ZONES: [&str; 8] = [
    "Ngã tư Nguyễn Văn Linh - Hàm Nghi",
    "Cầu Rồng",
    "Ngã ba Huế",
    "Chợ Hàn",
    "Bãi biển Mỹ Khê",
    "Cầu Trần Thị Lý",
    "Ngã tư Điện Biên Phủ - Hà Huy Tập",
    "Bến xe trung tâm",
];
